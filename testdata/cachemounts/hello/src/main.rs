fn main() {
    let mut buf = itoa::Buffer::new();
    let n = memchr::memchr(b'!', b"from a cached registry!").unwrap_or(0);
    println!("hello {}", buf.format(n));
}
