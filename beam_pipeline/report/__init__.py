"""The run report (`OUT/report/index.html`): figures, the example record, and what was written."""
