#!/usr/bin/env node
// One end of the rtt bench's echo pairs, run inside a lab host. Each mode prints JSON lines
// on stdout (and reads the peer's description from stdin for the data channel):
//   udp-echo PORT                  echo every UDP datagram back; {"ready":true}
//   udp-ping HOST PORT COUNT MS    COUNT 100-byte datagrams, one every MS ms; {"rtts":[ms...]}
//   dc-echo                        data channel answerer: offer on stdin, {"description":…} out, echoes
//   dc-ping COUNT MS               data channel offerer: {"description":…} out, answer on stdin, {"rtts":[…]}
// The data channel is set up as a TinCan link's (negotiated, unordered, maxRetransmits 0, RtcConfig
// mtu 1500, no STUN/TURN: host and peer-reflexive candidates only) without the datapath around it.
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import nodeDataChannel from 'node-datachannel';

const [mode, ...args] = process.argv.slice(2);
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const nextLine = async () => JSON.parse((await lines.next()).value);

/** Sends `count` probes one at a time (the next after the reply and a pause); the RTTs in ms. */
async function probe(count, gapMs, send, onReply) {
  const rtts = [];
  let t0 = 0n;
  let replied = () => {};
  onReply(() => {
    rtts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    replied();
  });
  for (let i = 0; i < count; i++) {
    const got = new Promise((r) => { replied = r; });
    t0 = process.hrtime.bigint();
    send();
    await Promise.race([got, sleep(2000)]);
    await sleep(gapMs);
  }
  return rtts;
}

function peerConnection(role) {
  const pc = new nodeDataChannel.PeerConnection(role, { iceServers: [], mtu: 1500, disableAutoNegotiation: true });
  const dc = pc.createDataChannel('echo', { negotiated: true, id: 0, unordered: true, maxRetransmits: 0 });
  const gathered = new Promise((r) => pc.onGatheringStateChange((s) => s === 'complete' && r()));
  const open = new Promise((r) => dc.onOpen(r));
  return { pc, dc, gathered, open };
}

const payload = Buffer.alloc(100);
if (mode === 'udp-echo') {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  s.bind(Number(args[0]), () => out({ ready: true }));
} else if (mode === 'udp-ping') {
  const [host, port, count, gap] = args;
  const s = dgram.createSocket('udp4');
  const rtts = await probe(Number(count), Number(gap), () => s.send(payload, Number(port), host), (cb) => s.on('message', cb));
  out({ rtts });
  process.exit(0);
} else if (mode === 'dc-echo') {
  const { pc, dc, gathered } = peerConnection('echo');
  const offer = await nextLine();
  pc.setRemoteDescription(offer.sdp, offer.type);
  pc.setLocalDescription('answer');
  await gathered;
  dc.onMessage((m) => dc.sendMessageBinary(m));
  out({ description: pc.localDescription() });
  await lines.next(); // runs until stdin closes
  process.exit(0);
} else if (mode === 'dc-ping') {
  const [count, gap] = args;
  const { pc, dc, gathered, open } = peerConnection('ping');
  pc.setLocalDescription('offer');
  await gathered;
  out({ description: pc.localDescription() });
  const answer = await nextLine();
  pc.setRemoteDescription(answer.sdp, answer.type);
  await open;
  const rtts = await probe(Number(count), Number(gap), () => dc.sendMessageBinary(payload), (cb) => dc.onMessage(cb));
  out({ rtts });
  process.exit(0);
} else {
  console.error('usage: echo-peer.mjs udp-echo PORT | udp-ping HOST PORT COUNT MS | dc-echo | dc-ping COUNT MS');
  process.exit(2);
}
