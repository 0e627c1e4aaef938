"""Running a study: the ask/tell driver, where trials run (executors: local, slurm), the Optuna storage, the
driver lease (lock), launch checks, and the trial process (trial/: the one place that runs the trainer).

It reads the study's definition (``sweeper.study``); nothing here reads results back up."""
