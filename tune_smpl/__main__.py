from tune_smpl.entry import console

console()
