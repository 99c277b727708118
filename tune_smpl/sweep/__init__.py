"""The driver side of a sweep, by concept:

settings   what `tune` was asked (validated)        storage   local path or URI, one API
record     the sweep's record (the one owner)       outcome   how a trial ended; best()
study      sampler choice; the study from a record  ledger    decides outcomes, feeds views
searcher   Ray Searcher on study.ask()              callbacks Ray callbacks, budget, progress
tuner      the Tuner of one command's run           resume    unfinished trials' restart points
run        one command's run, start to end         summary   what it prints and ends in MLflow
cluster    start/join Ray; resource/storage checks
"""
