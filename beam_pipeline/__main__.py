"""`python -m beam_pipeline`: the main job (see `cli/main_command.py`)."""
from beam_pipeline.cli.main_command import main
from ecg_common.cli import exit_now

if __name__ == "__main__":
    exit_now(main())
