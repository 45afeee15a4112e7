# python-etcd3 (Debian's python3-etcd3, a gRPC client) against one fresh
# member on 127.0.0.1:PORT. Prints one line per step; PythonClientTests runs
# it against ours and the real etcd and compares the lines.
import sys

import etcd3

from steps import collect, error, finish, log

port = int(sys.argv[1])
c = etcd3.client(host='127.0.0.1', port=port, timeout=10)

c.put('/a/1', 'one')
c.put('/a/2', 'two')
c.put('/b', 'bee')
value, meta = c.get('/a/1')
log('get', value, meta.key, meta.version, meta.create_revision == meta.mod_revision)
log('missing', c.get('/nope'))
log('prefix', [(v, m.key) for v, m in c.get_prefix('/a/')])
log('prefix descending', [v for v, _ in c.get_prefix('/a/', sort_order='descend')])
log('range', [v for v, _ in c.get_range('/a/1', '/b')])
log('all', [m.key for _, m in c.get_all()])
log('delete', c.delete('/b'), c.delete('/nope'))
log('put prev_kv', c.put('/a/1', 'uno', prev_kv=True).prev_kv.value)

lease = c.lease(30)
c.put('/l', 'leased', lease=lease)
log('lease', lease.granted_ttl, 25 <= lease.remaining_ttl <= 30, lease.keys)
lease.refresh()
log('revoke', lease.revoke(), c.get('/l'))

ok, responses = c.transaction(
    compare=[c.transactions.value('/a/1') == 'uno', c.transactions.version('/a/1') > 0],
    success=[c.transactions.put('/t', 'yes'), c.transactions.get('/a/1')],
    failure=[c.transactions.put('/t', 'no')])
log('txn', ok, c.get('/t')[0], [[kv[0] for kv in r] for r in responses if isinstance(r, list)])
ok, _ = c.transaction(compare=[c.transactions.create('/zzz') > 0], success=[],
                      failure=[c.transactions.delete('/t')])
log('txn failure', ok, c.get('/t')[0])
log('replace', c.replace('/a/1', b'uno', b'eins'), c.replace('/a/1', b'uno', b'x'), c.get('/a/1')[0])

# Watches from a revision: nothing races the puts.
def describe(event):
    return (type(event).__name__, event.key, event.value)


revision = c.get('/a/1')[1].mod_revision
c.put('/w', 'w1')
c.put('/w', 'w2')
c.delete('/w')
events, cancel = c.watch('/w', start_revision=revision + 1)
log('watch', collect(events, 3, describe))
cancel()
events, cancel = c.watch_prefix('/a/', start_revision=1)
log('watch prefix from 1', collect(events, 4, describe))
cancel()

with c.lock('lock', ttl=10) as held:
    log('lock', held.is_acquired(), c.lock('lock', ttl=10).acquire(timeout=0))
log('unlocked', held.is_acquired())

status = c.status()
log('status', status.db_size > 0, status.raft_term >= 1, status.leader.name)
log('members', [m.name for m in c.members])
log('compact', c.compact(revision))
log('compacted watch', error(lambda: next(iter(c.watch('/w', start_revision=1)[0]))))
log('defragment', c.defragment() is not None)
log('alarms', list(c.list_alarms()))
log('empty key', error(lambda: c.put('', 'x')))
log('unknown lease', error(lambda: c.revoke_lease(12345)))
log('lease on put', error(lambda: c.put('/x', 'y', lease=12345)))
finish()
