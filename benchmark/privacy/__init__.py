"""Privacy: the ledger (accounting), mechanisms, PATE analysis and the empirical audit."""
