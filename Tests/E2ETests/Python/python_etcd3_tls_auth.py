# python-etcd3 over mutual TLS against a member with auth enabled (users
# root, bob with read-write on /bob/, carol with no role). Arguments: PORT
# CA CERT KEY, the certificate's Common Name being bob. PythonClientTests
# runs it against ours and the real etcd and compares what it prints.
import sys

import etcd3

from steps import finish, step

port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
tls = dict(ca_cert=ca, cert_cert=cert, cert_key=key, timeout=10)


# No password: the certificate's Common Name is the user.
bob = etcd3.client(host='127.0.0.1', port=port, **tls)
step('cn put own', lambda: bob.put('/bob/x', 'v') is not None)
step('cn get own', lambda: bob.get('/bob/x')[0])
step('cn put other', lambda: bob.put('/alice', 'v'))
step('cn member list', lambda: [m.name for m in bob.members])
# A password login takes precedence over the certificate.
carol = etcd3.client(host='127.0.0.1', port=port, user='carol', password='cpw', **tls)
step('carol get', lambda: carol.get('/bob/x'))
step('carol put', lambda: carol.put('/bob/y', 'v'))
root = etcd3.client(host='127.0.0.1', port=port, user='root', password='pw', **tls)
step('root get', lambda: root.get('/bob/x')[0])
step('root put', lambda: root.put('/alice', 'a') is not None)
step('root members', lambda: [m.name for m in root.members])
step('wrong password', lambda: etcd3.client(host='127.0.0.1', port=port, user='root', password='no', **tls).get('/x'))
step('unknown user', lambda: etcd3.client(host='127.0.0.1', port=port, user='nobody', password='no', **tls).get('/x'))
finish()
