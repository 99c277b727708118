"""The driver side of a sweep, by concept:

settings   what `tune` was asked (validated)        storage   local path or URI, one API
record     the sweep's record (the one owner)       outcome   how a trial ended; best()
study      sampler choice; the study from a record  ledger    decides outcomes, feeds views
searcher   Ray Searcher on study.ask()              callbacks Ray callbacks, budget, progress
tuner      the Tuner of one command's run           resume    unfinished trials' restart points
run        one command's run -> SweepResult        summary   what the command prints at the end
tracking   the typed seam to MLflow's recorder     cluster   start/join Ray; checks
prior      warm start: earlier sweeps' trials in the study (prior.json)
finalists  the K best retrained on fresh seeds; the one pick of the best

It stops at the record: no module here imports the report package or the commands (a
test checks); the `tune` command closes a sweep (summary, MLflow's parent run, report) from
its result.
"""
