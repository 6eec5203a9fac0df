<?php
use PHPUnit\Framework\TestCase;

final class CartTest extends TestCase
{
    public function testAddsItem(): void
    {
        $this->assertSame(2, 1 + 1);
    }

    public function testComputesTotal(): void
    {
        $this->assertSame(12.5, 10 * 1.2, 'total with tax <&>');
    }

    public function testThrows(): void
    {
        throw new RuntimeException('état inattendu');
    }

    public function testSkipped(): void
    {
        $this->markTestSkipped('sandbox is down');
    }

    public function testIncomplete(): void
    {
        $this->markTestIncomplete('not written yet');
    }

    public function testRisky(): void
    {
    }

    /** @dataProvider sizes */
    public function testSizes(string $size): void
    {
        $this->assertNotSame('XL', $size);
    }

    public static function sizes(): array
    {
        return ['small' => ['S'], 'medium' => ['M'], 'extra large' => ['XL'], 'ünïcødé ✓' => ['Ü']];
    }
}
