import { CapsuleClient } from 'capsule-sdk';

const client = new CapsuleClient({ baseUrl: 'http://localhost:8080' });

// Create a Python sandbox
const capsule = await client.create({ template: 'python' });

// Run code
const result = await capsule.run('print("Hello, Capsule!")');
console.log(result.stdout); // "Hello, Capsule!\n"

// File operations
await capsule.writeFile('/workspace/data.txt', 'Hello World');
const content = await capsule.readFileText('/workspace/data.txt');

// Interactive terminal
const ws = capsule.connectTerminal();
ws.onmessage = (e) => console.log(e.data);
ws.send('python3\n');

// Cleanup
await capsule.delete();
