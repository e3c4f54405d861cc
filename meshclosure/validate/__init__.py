"""The validation hierarchy (DESIGN.md §9): offline skill, partially coupled runs, long
online runs judged by stability, conservation and emergent statistics, and the report."""
