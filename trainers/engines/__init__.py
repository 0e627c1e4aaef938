"""How the same method modules (``trainers/entropy``) run inside other engines: adapters, never second copies.

- ``trainers.engines.trl``          a ``trl.GRPOTrainer`` subclass whose loss is ``trainers.step_loss.micro_batch_loss``
                                    (every method), the trials' ``train`` for ``engine: trl``, and the entry point the
                                    TRL export's launcher starts;
- ``trainers.engines.trl_args``     a run config's ``GRPOConfig`` arguments (torch-free; the export and the trials);
- ``trainers.engines.verl_plugin``  the methods verl's policy-loss registry can give what they need (Clip-Cov,
                                    KL-Cov), registered under ``entropy_sweeper.<method>``; loaded by verl's workers
                                    through the ``verl.plugins`` entry point (pyproject.toml) or
                                    ``VERL_USE_EXTERNAL_MODULES=trainers.engines.verl_plugin``.

What an engine cannot give a method is declared beside the method's config section
(``MethodSection.refused_on``, ``trainers.config.engine_refusal``): the export and the adapters refuse it there.
"""
