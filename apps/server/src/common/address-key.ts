import { isIPv6 } from 'node:net';

/**
 * The key a source address is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by its /64, since one
 * host is usually handed a whole /64 and could otherwise ask from as many addresses as it likes. A request without a
 * network address (the local admin socket) counts as `local`.
 */
export function addressKey(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined || remoteAddress === '') return 'local';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  if (mapped) return mapped[1]!;
  if (!isIPv6(remoteAddress)) return remoteAddress;
  const [head = '', tail = ''] = remoteAddress.split('%')[0]!.toLowerCase().split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = remoteAddress.includes('::') ? (tail === '' ? [] : tail.split(':')) : [];
  const groups = remoteAddress.includes('::')
    ? [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups]
    : headGroups;
  return `${groups
    .slice(0, 4)
    .map((group) => group.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
