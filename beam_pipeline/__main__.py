"""`python -m beam_pipeline`: see `beam_pipeline.cli`."""

from beam_pipeline.cli import main
from beam_pipeline.fast_exit import exit_now

if __name__ == "__main__":
    exit_now(main())
