// The official CometD JavaScript client (npm `cometd` + `cometd-nodejs-client`), as the peer
// chatwatch is measured against in benches/transport.rs.
//
//   node tests/faye/cometd-client.mjs URL TRANSPORT COUNT
//
// Subscribes to /v2/me/chats over TRANSPORT ("websocket" or "long-polling" only), prints
// "READY <transport>" once subscribed and "DONE" when COUNT messages have arrived.
import { adapt } from 'cometd-nodejs-client';
import { CometD } from 'cometd';

adapt();
const [url, transport, countText] = process.argv.slice(2);
const count = Number(countText);
const cometd = new CometD();
for (const t of cometd.getTransportTypes()) {
  if (t !== transport) cometd.unregisterTransport(t);
}
cometd.configure({ url, logLevel: 'warn' });
let received = 0;
cometd.handshake((reply) => {
  if (!reply.successful) {
    process.stderr.write('handshake failed: ' + JSON.stringify(reply) + '\n');
    process.exit(1);
  }
  cometd.subscribe('/v2/me/chats', () => {
    received++;
    if (received === count) process.stdout.write('DONE\n');
  }, (sub) => {
    // Only `transport` is registered, so it is the one in use.
    if (sub.successful) process.stdout.write('READY ' + transport + '\n');
  });
});
