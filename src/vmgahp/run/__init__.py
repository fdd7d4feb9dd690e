"""``vmgahp run JOB.sub``: run one VM-universe job locally, as condor_starter would.

One job per module: the submit file is read (:mod:`.submit_file`) and turned
into the job ad condor_submit would make (:mod:`.submit`, with
:mod:`.submit_known` and :mod:`.submit_legacy`); :mod:`.plan` decides the rest
before anything runs (job user, output, resume, host defaults from
:mod:`.defaults`); :mod:`.scratch` prepares the scratch directory the way the
starter's file transfer does; :mod:`.starter` is the starter's policy, driving
``vmgahp -f -M 3`` (the process: :mod:`.gahp`) through its exact
conversation, with live progress (:mod:`.progress`); :mod:`.output` brings the
output - or, on Ctrl-C, a checkpoint - back; :mod:`.report` prints what
happened; :mod:`.cli` parses the command line and runs these in order. The
point is to test a VM image before submitting it to a pool.
"""
