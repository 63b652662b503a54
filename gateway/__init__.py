"""A Kinesis Data Streams, Kinesis Video Streams, Data Firehose and Glue Data Catalog compatible gateway
(aiohttp), with continuous SQL analytics on its streams."""
