// The AWS SDK for JavaScript v3 Kinesis client with its DEFAULT settings (HTTP/2: prior knowledge on
// http://, ALPN h2 on https://) against the gateway. Usage: node kinesis_h2.mjs <endpoint> <stream>
// [access key] [secret]. Prints one JSON object of what it saw; tests/test_http2.py asserts on it.
// NODE_EXTRA_CA_CERTS trusts a test CA for https://.
import {
  KinesisClient, CreateStreamCommand, DescribeStreamSummaryCommand, PutRecordCommand, PutRecordsCommand,
  ListShardsCommand, GetShardIteratorCommand, GetRecordsCommand, SplitShardCommand, DescribeStreamCommand,
} from "@aws-sdk/client-kinesis";

const [endpoint, stream, accessKeyId = "AKIDEXAMPLE", secretAccessKey = "secret"] = process.argv.slice(2);
const client = new KinesisClient({ endpoint, region: "us-east-1", credentials: { accessKeyId, secretAccessKey } });
const out = {};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function errorName(command) {
  try {
    await client.send(command);
    return null;
  } catch (err) {
    return { name: err.name, status: err.$metadata?.httpStatusCode };
  }
}

async function waitActive() {
  for (let i = 0; i < 100; i++) {
    const s = await client.send(new DescribeStreamSummaryCommand({ StreamName: stream }));
    if (s.StreamDescriptionSummary.StreamStatus === "ACTIVE") return;
    await sleep(100);
  }
  throw new Error("stream never became ACTIVE");
}

try {
  await client.send(new CreateStreamCommand({ StreamName: stream, ShardCount: 1 }));
  await waitActive();
  const one = await client.send(new PutRecordCommand({ StreamName: stream, PartitionKey: "k", Data: Buffer.from("first") }));
  out.putRecord = { shardId: one.ShardId, sequenceNumber: one.SequenceNumber };
  const many = await client.send(new PutRecordsCommand({
    StreamName: stream,
    Records: Array.from({ length: 20 }, (_, i) => ({ PartitionKey: `p${i}`, Data: Buffer.from(`record-${i}`) })),
  }));
  out.putRecordsFailed = many.FailedRecordCount;
  const iterator = (await client.send(new GetShardIteratorCommand({
    StreamName: stream, ShardId: one.ShardId, ShardIteratorType: "TRIM_HORIZON",
  }))).ShardIterator;
  const got = await client.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: 100 }));
  out.records = got.Records.map((r) => Buffer.from(r.Data).toString());
  await client.send(new SplitShardCommand({
    StreamName: stream, ShardToSplit: one.ShardId, NewStartingHashKey: (2n ** 127n).toString(),
  }));
  await waitActive();
  const shards = await client.send(new ListShardsCommand({ StreamName: stream }));
  out.shards = shards.Shards.map((s) => ({ id: s.ShardId, parent: s.ParentShardId ?? null }));
  out.missingStream = await errorName(new DescribeStreamCommand({ StreamName: `${stream}-missing` }));
  out.badSplit = await errorName(new SplitShardCommand({ StreamName: stream, ShardToSplit: "shardId-999", NewStartingHashKey: "1" }));
  out.duplicateStream = await errorName(new CreateStreamCommand({ StreamName: stream, ShardCount: 1 }));
} catch (err) {
  out.error = { name: err.name, message: err.message, status: err.$metadata?.httpStatusCode };
}
client.destroy();
console.log(JSON.stringify(out));
