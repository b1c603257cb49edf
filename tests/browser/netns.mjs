// A network namespace for the browser tests, joined to the host by a veth pair: what runs
// inside it (a browser, another WebRTC stack) reaches ting on the host side of the pair
// only, over an interface the test owns and can cut, squeeze or renumber. Needs root
// (CAP_NET_ADMIN) and iproute2; the namespace and the pair are removed on every exit.

import { execFileSync } from 'node:child_process';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { log } from './harness.mjs';

export function ip(...args) {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Makes namespace `ting-<name>-<tag>` with a veth pair: the host side at `hostIp`, the
 * namespace side at `nsIp` (both /24 of a subnet of 10.<octet>.x). Returns its names and
 * addresses, `inNs(...cmd)` to run a command inside, and `wrapper(program)` for a script
 * that runs `program` inside (for a browser's executablePath).
 */
export function makeNamespace(name, octet) {
  const tag = process.pid % 100000;
  const ns = {
    NS: `ting-${name}-${tag}`,
    HOST_IF: `t${name.slice(0, 3)}h${tag}`,
    NS_IF: `t${name.slice(0, 3)}c${tag}`,
    SUBNET: `10.${octet}.${tag % 250}`,
  };
  ns.HOST_IP = `${ns.SUBNET}.1`;
  ns.NS_IP = `${ns.SUBNET}.2`;
  ns.inNs = (...cmd) => execFileSync('ip', ['netns', 'exec', ns.NS, ...cmd], { stdio: ['ignore', 'ignore', 'pipe'] });
  const remove = () => {
    for (const args of [['link', 'del', ns.HOST_IF], ['netns', 'del', ns.NS]]) {
      try {
        ip(...args);
      } catch {
        // Already gone.
      }
    }
  };
  try {
    ip('netns', 'add', ns.NS);
  } catch (e) {
    throw new Error(`cannot make a network namespace (${String(e.stderr ?? e.message).trim()}); `
      + 'this test needs root (CAP_NET_ADMIN) and the ip tool (iproute2)');
  }
  process.on('exit', remove);
  ip('link', 'add', ns.HOST_IF, 'type', 'veth', 'peer', 'name', ns.NS_IF, 'netns', ns.NS);
  ip('addr', 'add', `${ns.HOST_IP}/24`, 'dev', ns.HOST_IF);
  ip('link', 'set', ns.HOST_IF, 'up');
  ns.inNs('ip', 'addr', 'add', `${ns.NS_IP}/24`, 'dev', ns.NS_IF);
  ns.inNs('ip', 'link', 'set', ns.NS_IF, 'up');
  ns.inNs('ip', 'link', 'set', 'lo', 'up');
  ns.wrapper = (program) => {
    const path = join(tmpdir(), `ting-netns-${name}-${tag}.sh`);
    writeFileSync(path, `#!/bin/sh\nexec ip netns exec ${ns.NS} ${program} "$@"\n`);
    chmodSync(path, 0o755);
    process.on('exit', () => rmSync(path, { force: true }));
    return path;
  };
  log(`namespace ${ns.NS}: ${ns.NS_IP} on ${ns.NS_IF}, the host at ${ns.HOST_IP} on ${ns.HOST_IF}`);
  return ns;
}
