"""Reports: the HTML/Markdown document, run-report sections, plots and run comparison (no torch)."""
