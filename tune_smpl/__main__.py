from tune_smpl.cli import console

console()
