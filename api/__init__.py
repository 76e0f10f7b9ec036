"""The HTTP front end: validates messages against their schemas and sends them to SQS."""
