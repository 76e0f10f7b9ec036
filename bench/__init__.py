"""Benchmarks: our worker and API against stock Dramatiq + dramatiq-sqs on one local SQS server (`make bench`)."""
