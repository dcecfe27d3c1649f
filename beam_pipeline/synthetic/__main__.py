"""`python -m beam_pipeline.synthetic --output_dir DIR`: the demo data set (see `generator.py`)."""
import sys

from beam_pipeline.synthetic.generator import main

if __name__ == "__main__":
    sys.exit(main())
