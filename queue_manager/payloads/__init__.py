"""Large messages through S3: the claim-check of the AWS extended clients, wire-compatible with them.

A message whose SQS body and attributes would pass the threshold is offloaded: its body goes to S3 as
it is, and SQS carries `["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": B,
"s3Key": K}]` with the attribute `ExtendedPayloadSize`. Workers fetch the body before the actor runs
and delete the object only once SQS has deleted its message.

- `wire`: the pointer and the attribute, written and read (both class and attribute names).
- `store`: the bucket: put, get, delete, its keys and its errors.
- `offload`: what a sender does (decide, upload, point, discard after a failed send).
- `fetch`: what a worker does (a stand-in message until the payload is fetched, deletes after acks).
- `middleware`: the worker middleware that fetches a payload inside the actor's time limit.
"""
