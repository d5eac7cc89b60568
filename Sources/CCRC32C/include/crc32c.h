#ifndef BUCKETFS_CRC32C_H
#define BUCKETFS_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli, as S3's x-amz-checksum-crc32c) of `length` bytes, continuing from `crc` (0 to start).
/// Uses SSE4.2's crc32 instruction, three streams at once, where the CPU has it; a table otherwise.
uint32_t bucketfs_crc32c(uint32_t crc, const void *bytes, size_t length);
/// The same with the table only (tests compare the two).
uint32_t bucketfs_crc32c_software(uint32_t crc, const void *bytes, size_t length);
/// CRC of A followed by B, from crc(A), crc(B) and B's length.
uint32_t bucketfs_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);
/// Whether bucketfs_crc32c uses the instruction.
int bucketfs_crc32c_hardware(void);
#endif
