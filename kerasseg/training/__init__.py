"""What a training run is made of, below kerasseg.train (its public face and command line): `config`
(TrainConfig, every setting a field), `arguments` (the command line's flags, made from those fields),
`rundir` (the run's directory: its record, epoch commits, the lock) and `distribute` (strategies, replicas
and their reductions); private to kerasseg.train (the leading underscore, as timm marks its internals):
`_rundata` (the run's data, its pipeline and every scoring in the run's geometry) and `_fitting` (the model
built, compiled and fitted). This package imports nothing itself.
"""
