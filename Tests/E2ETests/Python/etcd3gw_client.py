# etcd3gw (Debian's python3-etcd3gw, the JSON gateway client OpenStack
# uses) against one fresh member on 127.0.0.1:PORT. Prints one line per
# step; PythonClientTests runs it against ours and the real etcd and
# compares the lines.
import sys

from etcd3gw.client import Etcd3Client
from etcd3gw.utils import _encode

from steps import collect, error, finish, log

port = int(sys.argv[1])
c = Etcd3Client(host='127.0.0.1', port=port, api_path='/v3/', timeout=10)

log('put', c.put('/a/1', 'one'), c.put('/a/2', 'two'), c.put('/b', 'bee'))
log('get', c.get('/a/1'), c.get('/nope'))
value, meta = c.get('/a/1', metadata=True)[0]
log('get metadata', value, meta['key'], meta['version'], meta['create_revision'] == meta['mod_revision'])
log('prefix', [(v, m['key'], m['version']) for v, m in c.get_prefix('/a/')])
log('prefix descending', [v for v, _ in c.get_prefix('/a/', sort_order='descend')])
log('all', [m['key'] for _, m in c.get_all()])
log('create', c.create('/c', 'see'), c.create('/c', 'sea'), c.get('/c'))
log('replace', c.replace('/a/1', 'one', 'uno'), c.replace('/a/1', 'one', 'x'), c.get('/a/1'))
log('delete', c.delete('/b'), c.delete('/nope'))

lease = c.lease(30)
c.put('/l', 'leased', lease=lease)
log('lease', 25 <= lease.ttl() <= 30, lease.keys(), 25 <= lease.refresh() <= 30)
log('revoke', lease.revoke(), c.get('/l'), lease.ttl())

txn = {'compare': [{'key': _encode('/c'), 'result': 'EQUAL', 'target': 'VALUE', 'value': _encode('see')}],
       'success': [{'request_put': {'key': _encode('/t'), 'value': _encode('yes')}},
                   {'request_range': {'key': _encode('/c')}}],
       'failure': [{'request_put': {'key': _encode('/t'), 'value': _encode('no')}}]}
result = c.transaction(txn)
log('txn', result.get('succeeded'), [sorted(r.keys()) for r in result['responses']], c.get('/t'))

# Watches from a revision: nothing races the puts (etcd3gw reads one JSON
# message per chunk of the streamed response).
def describe(event):
    return (event.get('type', 'PUT'), event['kv']['key'], event['kv'].get('value', b''))


revision = int(c.get('/t', metadata=True)[0][1]['mod_revision'])
c.put('/w', 'w1')
c.put('/w', 'w2')
c.delete('/w')
events, cancel = c.watch('/w', start_revision=revision + 1)
log('watch', collect(events, 3, describe))
cancel()
events, cancel = c.watch_prefix('/a/', start_revision=1)
log('watch prefix from 1', collect(events, 3, describe))
cancel()

lock = c.lock('lock', ttl=10)
log('lock', lock.acquire(), lock.is_acquired(), c.lock('lock', ttl=10).is_acquired())
log('unlock', lock.release(), lock.is_acquired())
log('delete prefix', c.delete_prefix('/a/'), c.get_prefix('/a/'))

status = c.status()
# Ours answers as etcd 3.6, with 3.5's and 3.6's fields besides 3.4's.
log('status', {'dbSize', 'dbSizeInUse', 'header', 'leader', 'raftAppliedIndex', 'raftIndex', 'raftTerm',
               'version'} <= set(status.keys()), int(status['header']['revision']) > 0)
log('members', [(m['name'], m['clientURLs'] == ['http://127.0.0.1:%d' % port]) for m in c.members()])
log('empty key', error(lambda: c.put('', 'x')))
log('unknown lease', error(lambda: c.put('/x', 'y', lease=type('Lease', (), {'id': 12345})())))
finish()
