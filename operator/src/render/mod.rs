//! Plots, the Markdown performance report and the dashboard page, from agents' histories.
