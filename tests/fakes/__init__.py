"""Local stand-ins for the internet services investflow talks to."""
