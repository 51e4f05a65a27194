"""Daily stock prices: Yahoo (yfinance), exchange calendars, quality checks, re-bases, writes."""
