"""Raft consensus: the pure core and its IO shell."""
