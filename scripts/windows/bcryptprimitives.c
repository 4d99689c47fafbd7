/* A stand-in for Windows' bcryptprimitives.dll, for running Trinity's Windows binaries under
 * wine 8.0, which lacks it: every current Rust program imports ProcessPrng from it (the
 * standard library's source of randomness). ProcessPrng fills the buffer from RtlGenRandom
 * (advapi32's SystemFunction036), which wine has. Never shipped: Windows has the real one. */
#include <windows.h>

BOOLEAN NTAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
