"""Stage 6, training: DPO with TRL + PEFT, its launch and checks."""
