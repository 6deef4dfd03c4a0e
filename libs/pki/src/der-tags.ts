/** Universal tags used by Sigil (ITU-T X.680 §8.6), already combined with the constructed bit where DER requires it. */
export const DerTag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OBJECT_IDENTIFIER: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
  /** `[0]` constructed: a certificate's explicit version, a CSR's attributes. */
  CONTEXT_0_CONSTRUCTED: 0xa0,
} as const;
