"""`python -m e4ecli ...` (also `torchrun -m e4ecli ...`)."""
from e4ecli.cli import main

if __name__ == "__main__":
    main()
