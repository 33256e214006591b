// Reads the table `big` through pgjdbc with autoCommit off and a fetch size,
// the way pgjdbc streams (a portal executed 1,000 rows at a time), and checks
// every row: its count and sums against the server's own, and each label
// against md5 of its number (tests/integration/streaming.rs watches the
// server's memory meanwhile).
//
// Usage: java -Xmx128m -cp postgresql.jar Streaming.java PORT

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.HexFormat;

public class Streaming {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String url = "jdbc:postgresql://127.0.0.1:" + port + "/lookout?user=lookout";
        MessageDigest md5 = MessageDigest.getInstance("MD5");
        long rows = 0;
        BigInteger total = BigInteger.ZERO;
        BigInteger squares = BigInteger.ZERO;
        try (Connection conn = DriverManager.getConnection(url)) {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(1000);
                try (ResultSet rs = st.executeQuery("SELECT n, label FROM big")) {
                    while (rs.next()) {
                        long n = rs.getLong(1);
                        String hex = HexFormat.of().formatHex(
                            md5.digest(Long.toString(n).getBytes(StandardCharsets.UTF_8)));
                        if (!rs.getString(2).equals(hex.repeat(8))) {
                            throw new AssertionError("row " + n + ": wrong label");
                        }
                        BigInteger big = BigInteger.valueOf(n);
                        rows++;
                        total = total.add(big);
                        squares = squares.add(big.multiply(big));
                    }
                }
            }
            conn.commit();
            conn.setAutoCommit(true);
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery(
                     "SELECT count(*)::text, sum(n)::text, sum(n * n)::text FROM big")) {
                rs.next();
                String got = rows + " " + total + " " + squares;
                String want = rs.getString(1) + " " + rs.getString(2) + " " + rs.getString(3);
                if (!got.equals(want)) {
                    throw new AssertionError("read " + got + ", the table holds " + want);
                }
            }
        }
        System.out.println("pgjdbc setFetchSize: " + rows + " rows ok");
    }
}
