"""What an operator checks first: data freshness per market and series, and the health page."""
