"""`python -m beam_pipeline.reprocess`: one scheduled reprocessing run (see `cli/reprocess_command.py`)."""
from beam_pipeline.cli.reprocess_command import main
from ecg_common.cli import exit_now

if __name__ == "__main__":
    exit_now(main())
