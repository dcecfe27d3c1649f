"""`python -m beam_pipeline.report OUT`: redraw a published output's report (see `build.py`)."""
import sys

from beam_pipeline.report.build import main

if __name__ == "__main__":
    sys.exit(main())
