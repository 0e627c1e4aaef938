"""Reading a study's results: status, report (plots), compare (paired gains), export (the best config, TRL and
verl formats), verify (re-run the best on fresh seeds) and the MLflow UI.

It reads the study's definition and its storage (``sweeper.study``, ``sweeper.run``); nothing reads back up."""
