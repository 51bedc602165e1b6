// SHA-256 (common/sha256.h) against known answers (NIST examples for FIPS 180-4, CAVP, RFC 6234;
// docs/build-notes.md#openssl): the empty message, one block, two blocks, a
// 896-bit message and a million 'a's; and the same digest fed in pieces, and from a file.
#include "common/sha256.h"

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "common/error.h"
#include "common/hex.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

TEST_CASE("sha256: NIST known answers") {
    CHECK(common::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(common::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    // 448 bits: the padding does not fit, so a second block is needed.
    CHECK(common::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    CHECK(common::sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopq"
                             "rlmnopqrsmnopqrstnopqrstu") ==
          "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    CHECK(common::sha256_hex(std::string(1000000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256: a message fed in pieces of every size hashes as one piece") {
    const std::string msg(1000, 'a');
    const std::string whole = common::sha256_hex(msg);
    for (size_t piece : {1u, 3u, 63u, 64u, 65u, 999u}) {
        CAPTURE(piece);
        common::Sha256 h;
        for (size_t at = 0; at < msg.size(); at += piece) h.update(std::string_view(msg).substr(at, piece));
        h.update(nullptr, 0);  // an empty update changes nothing
        CHECK(h.hex() == whole);
    }
}

TEST_CASE("sha256: a file's bytes, and only a regular file") {
    tests::TempDir dir;
    const std::string path = dir.path() + "/million";
    {
        std::ofstream f(path, std::ios::binary);
        f << std::string(1000000, 'a');
    }
    CHECK(common::sha256_file(path) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    const std::string fifo = dir.path() + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_AS(common::sha256_file(fifo), common::Error);  // refused, not waited on
    CHECK_THROWS_AS(common::sha256_file(dir.path()), common::Error);
    try {
        (void)common::sha256_file(dir.path() + "/missing");
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
    }
}

TEST_CASE("hex: lower case, two digits a byte, leading zeros kept") {
    const unsigned char bytes[] = {0x00, 0x0f, 0xa0, 0xff};
    CHECK(common::to_hex(bytes, 4) == "000fa0ff");
    CHECK(common::to_hex(bytes, 0).empty());
}
