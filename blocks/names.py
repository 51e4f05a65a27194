"""The name of each saved block: deployments/blocks.py saves them, the code that uses one loads it
by the same name."""

MARKET_DATABASE = "market-database"
FRED_API_KEY = "fred-api-key"
AWS_CREDENTIALS = "investflow-aws"
BACKUP_BUCKET = "investflow-backups"
MODEL_BUCKET = "investflow-models"
OCI_CREDENTIALS = "oci-credentials"
ALERTS = "investflow-alerts"
