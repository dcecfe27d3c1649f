"""The demo data generator (`python -m beam_pipeline.synthetic`); not shipped to Beam workers."""
