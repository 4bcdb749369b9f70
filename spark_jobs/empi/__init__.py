"""EMPI: one stable master identity per resident across all member systems (IHE PIX/PDQ)."""
