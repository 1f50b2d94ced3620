"""``python -m synthgen`` runs the command line."""

from synthgen.cli.main import app

if __name__ == "__main__":  # tile writer processes (forkserver) import this module again as __mp_main__
    app()
