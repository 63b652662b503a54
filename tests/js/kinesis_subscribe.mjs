// SubscribeToShard with the AWS SDK for JavaScript v3 Kinesis client and its DEFAULT settings (HTTP/2:
// prior knowledge on http://). Usage: node kinesis_subscribe.mjs <endpoint> <stream> <consumer ARN>
// Subscribes to shardId-000000000000 from TRIM_HORIZON, puts 5 records once the first event arrived
// (they must be pushed), reads until 10 records came, then hangs up. Prints one JSON object of what it
// saw; tests/test_kds_subscribe.py asserts on it.
import { KinesisClient, PutRecordsCommand, SubscribeToShardCommand } from "@aws-sdk/client-kinesis";

const [endpoint, stream, consumerARN] = process.argv.slice(2);
const options = { endpoint, region: "us-east-1", credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" } };
const client = new KinesisClient(options);
const producer = new KinesisClient(options);
const out = { records: [], events: 0 };
const abort = new AbortController();
try {
  const response = await client.send(
    new SubscribeToShardCommand({ ConsumerARN: consumerARN, ShardId: "shardId-000000000000", StartingPosition: { Type: "TRIM_HORIZON" } }),
    { abortSignal: abort.signal },
  );
  for await (const event of response.EventStream) {
    const e = event.SubscribeToShardEvent;
    if (!e) continue;
    out.events += 1;
    out.records.push(...e.Records.map((r) => Buffer.from(r.Data).toString()));
    out.continuation = e.ContinuationSequenceNumber;
    if (e.Records.length) out.lastSequenceNumber = e.Records[e.Records.length - 1].SequenceNumber;
    if (out.events === 1) {
      await producer.send(new PutRecordsCommand({
        StreamName: stream, Records: Array.from({ length: 5 }, (_, i) => ({ PartitionKey: "k", Data: Buffer.from(`live-${i}`) })),
      }));
    }
    if (out.records.length >= 10) break;
  }
} catch (err) {
  out.error = { name: err.name, message: err.message, status: err.$metadata?.httpStatusCode };
}
abort.abort();
client.destroy();
producer.destroy();
console.log(JSON.stringify(out));
process.exit(0);
