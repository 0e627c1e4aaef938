"""Defining a study: the study YAML -> a validated, frozen ``StudySpec`` (spec), its search space (space),
the sampler (samplers) and the pruners (pruning, paired_pruner), and what every section shares (schema).

Nothing here runs a trial or reads results: this phase is checked on a login node in milliseconds."""
