//! Training analysis: convergence, stalls, divergence, stragglers and client trends (pure, no I/O).
