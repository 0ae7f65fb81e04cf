#!/usr/bin/env node
// Turns the declarative accounts file into prosody's internal storage (fast: no prosodyctl per user).
//
//   node accounts.mjs ACCOUNTS_FILE DATA_PATH DOMAIN GROUPS_FILE ITERATIONS
//
// Writes DATA_PATH/<host>/accounts/<user>.dat with SCRAM-SHA-1 credentials exactly as
// mod_auth_internal_hashed stores them (salt, iteration_count, stored_key, server_key; PLAIN logins are
// checked against the same hashes), DATA_PATH/<host>/roster/<user>.dat for `roster` lines, and a
// mod_groups groups file. Prints a JSON summary {file, users: [...], rosters: [...]} on stdout.
import { createHash, createHmac, pbkdf2Sync, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [file, dataPath, domain, groupsFile, iterArg] = process.argv.slice(2);
if (!file || !dataPath || !domain || !groupsFile) {
  console.error('usage: accounts.mjs ACCOUNTS_FILE DATA_PATH DOMAIN GROUPS_FILE [ITERATIONS]');
  process.exit(2);
}
const iterations = Number(iterArg ?? 4096);

/** @type {Map<string, {name: string, jid: string, password: string, groups: string[]}>} */
const users = new Map();
/** @type {[string, string][]} */
const rosters = [];

function addUser(name, password, groups, lineNo) {
  if (!/^[a-z0-9._-]+$/.test(name)) throw new Error(`line ${lineNo}: bad user name ${name}`);
  if (users.has(name)) throw new Error(`line ${lineNo}: duplicate user ${name}`);
  users.set(name, { name, jid: `${name}@${domain}`, password, groups });
}

readFileSync(file, 'utf8').split('\n').forEach((raw, i) => {
  const line = raw.replace(/#.*/, '').trim();
  if (!line) return;
  const [kind, ...f] = line.split(/\s+/);
  const lineNo = i + 1;
  if (kind === 'user' && f.length >= 2) {
    addUser(f[0], f[1], f.slice(2), lineNo);
  } else if (kind === 'users' && f.length >= 3) {
    const [prefix, first, last] = [f[0], Number(f[1]), Number(f[2])];
    for (let n = first; n <= last; n++) addUser(`${prefix}${n}`, `pw-${prefix}${n}`, f.slice(3), lineNo);
  } else if (kind === 'roster' && f.length === 2) {
    rosters.push([f[0], f[1]]);
  } else {
    throw new Error(`${file}:${lineNo}: cannot parse: ${raw}`);
  }
});
for (const [a, b] of rosters) {
  if (!users.has(a) || !users.has(b)) throw new Error(`roster ${a} ${b}: unknown user`);
}

// prosody's util.datamanager encodes every non-alphanumeric byte as %xx
const enc = (s) => s.replace(/[^A-Za-z0-9]/g, (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0'));
const lua = (s) => JSON.stringify(s); // our strings are plain ASCII: a JSON string is a valid Lua string
const hostDir = join(dataPath, enc(domain));
mkdirSync(join(hostDir, 'accounts'), { recursive: true });
mkdirSync(join(hostDir, 'roster'), { recursive: true });

const hmac = (key, msg) => createHmac('sha1', key).update(msg).digest();
for (const u of users.values()) {
  // RFC 5802: SaltedPassword = Hi(password, salt, i); StoredKey = H(HMAC(SP, "Client Key"));
  // ServerKey = HMAC(SP, "Server Key"). prosody uses the salt string's bytes as the salt.
  const salt = randomUUID();
  const salted = pbkdf2Sync(u.password, salt, iterations, 20, 'sha1');
  const storedKey = createHash('sha1').update(hmac(salted, 'Client Key')).digest('hex');
  const serverKey = hmac(salted, 'Server Key').toString('hex');
  writeFileSync(
    join(hostDir, 'accounts', `${enc(u.name)}.dat`),
    `return {\n\t["iteration_count"] = ${iterations};\n\t["salt"] = ${lua(salt)};\n` +
      `\t["server_key"] = ${lua(serverKey)};\n\t["stored_key"] = ${lua(storedKey)};\n};\n`,
  );
}

/** @type {Map<string, string[]>} */
const contacts = new Map();
for (const [a, b] of rosters) {
  contacts.set(a, [...(contacts.get(a) ?? []), b]);
  contacts.set(b, [...(contacts.get(b) ?? []), a]);
}
for (const [name, peers] of contacts) {
  let out = 'return {\n\t[false] = {\n\t\t["version"] = 1;\n\t\t["pending"] = {};\n\t};\n';
  for (const p of peers) {
    out += `\t[${lua(`${p}@${domain}`)}] = {\n\t\t["subscription"] = "both";\n\t\t["groups"] = {};\n\t\t["name"] = ${lua(p)};\n\t};\n`;
  }
  writeFileSync(join(hostDir, 'roster', `${enc(name)}.dat`), out + '};\n');
}

/** @type {Map<string, string[]>} */
const groups = new Map();
for (const u of users.values()) for (const g of u.groups) groups.set(g, [...(groups.get(g) ?? []), u.jid]);
let groupsText = '';
for (const [g, jids] of groups) groupsText += `[${g}]\n${jids.map((j) => `${j}=${j.split('@')[0]}\n`).join('')}`;
writeFileSync(groupsFile, groupsText);

process.stdout.write(JSON.stringify({ file, users: [...users.values()], rosters }));
