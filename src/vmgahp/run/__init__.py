"""``vmgahp run JOB.sub``: run one VM-universe job locally, as condor_starter would.

It turns the submit description into the job ad condor_submit would make
(:mod:`.submit`), prepares a scratch directory the way the starter's file
transfer does (:mod:`.scratch`), drives ``vmgahp -f -M 3`` through the
starter's exact conversation (:mod:`.starter`), shows live progress
(:mod:`.progress`) and brings the output - or, on Ctrl-C, a checkpoint - back
(:mod:`.cli`). The point is to test a VM image before submitting it to a pool.
"""
