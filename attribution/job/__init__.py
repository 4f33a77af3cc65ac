"""One job path: the pipeline that calls the stages, the job around it (paths, locks,
recovery) and the run directory's commit."""
