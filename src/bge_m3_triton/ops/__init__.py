"""Operations: the command line, the launcher, rendering the model repository, test checkpoints."""
