fn main() {
    println!("vsr-load: not implemented yet");
}
